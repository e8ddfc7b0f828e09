"""Curated images: the catalog (catalog.yaml), the NVIDIA driver table, what each image needs of
a node, and the files each image is built from (Dockerfile, Apptainer definition, environment
lock), all generated from the catalog. Data plus the code that validates and renders it."""
