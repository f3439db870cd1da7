-- MLflow gets its own database beside Prefect's.
CREATE DATABASE mlflow OWNER tlmed;
