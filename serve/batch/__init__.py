"""Batch prediction: a file or a folder of parts (:mod:`.files`), here or on a cluster
(:mod:`.engines`: Dask, :mod:`.dask`; Spark, :mod:`.spark`), each part by the same worker
(:mod:`.workers`). Dask and Spark are extras, imported only when used."""
