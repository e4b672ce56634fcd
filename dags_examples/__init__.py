"""Example step library and the same pipeline for local runs, Airflow and Flyte."""
