"""The isthmus flytekit plugin: portable isthmus steps as Flyte tasks."""
