"""Training layer: pretraining tttlab-mini on Swiss-Prot (corpus, leakage filter, resumable runs);
built on the engine and the data layer."""
