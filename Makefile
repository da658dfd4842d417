.PHONY: up install test lint kafka-start kafka-stop schemas

up: install  ## fresh machine -> venv, install, local Kafka, WordCount + agent with a live view
	.venv/bin/lastream up

install:  ## create .venv and install the project
	scripts/bootstrap.sh

test:  ## fresh machine -> venv, install, lint, Kubernetes test binaries (once), local Kafka, full test suite
	scripts/test.sh

lint:  ## ruff: lint and formatting (line length 120, rules in pyproject.toml)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

kafka-start:
	.venv/bin/lastream kafka start

kafka-stop:
	.venv/bin/lastream kafka stop

schemas:  ## re-export the JSON Schemas of the wire messages
	.venv/bin/lastream schemas
