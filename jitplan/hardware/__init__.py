"""Hardware: the GPU catalog, the spec grammar (``2xRTX3060``) and the machine probe."""
