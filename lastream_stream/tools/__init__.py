"""What a user runs on top of the layers below: the ``lastream`` CLI, the live terminal
view and pretraining."""
