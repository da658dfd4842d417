"""What travels on the topics: the message contracts, their JSON Schemas, and the decoder
that sends whatever cannot be used to the dead-letter topic with its reason. Imports
nothing else of the package."""
