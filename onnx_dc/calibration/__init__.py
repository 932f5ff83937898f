"""The data-aware path (compress --calibration, sensitivity, --target-ratio), one stage a module:

capture.py     layer inputs captured from onnxruntime as [rows, K] matrices (conv: image patches)
solvers.py     the numpy solvers: OBS / SparseGPT masks, exact refits, GPTQ assignment, codebook, bias and KL refits
neighbours.py  what a fit reads from the graph around a layer (the next layer, whether it is the classifier)
fit.py         fit_layer(): one layer pruned-and-quantized on its statistics (compression and analysis call it)
compress.py    the graph-order loop: each layer fitted on the activations of the compressed layers before it
suffix.py      the part of a model downstream of a layer, run on its own (the analysis's candidate runs)
sensitivity.py each layer compressed alone at each candidate setting, the model's output error measured
policy.py      per-layer settings for a byte budget, and the search that meets a target ratio
saved.py       an analysis saved to a file and checked on reuse

Nothing is imported here: config.py reads solvers' choices without loading onnxruntime.
"""
