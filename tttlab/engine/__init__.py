"""Engine: model loading (the one door), the fast ESM-2 path, BERT masking, the TTT loop and its
exact reset, scoring (marginals, pseudo-perplexity, representations) and the one config. It imports
nothing from tttlab but the ground floor (``tttlab.common``)."""
