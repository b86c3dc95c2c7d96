"""Case studies: fitness (DMS), structure (contacts, secondary structure), function
(localisation), your protein, and Dask sweeps over many proteins; each uses only the engine, the data
layer and the ground floor, never the command line or the plots."""
