"""pyml's verbs on a Spark target (dbt-spark, `method: session`): train with xgboost.spark,
score with the booster broadcast to the executors, the registry in the Spark catalog
(pyml.store.spark_registry). Imported only when the target is type spark: pyspark is an
optional extra."""
