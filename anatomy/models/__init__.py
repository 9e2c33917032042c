"""Language models: `tiny` (built and pretrained offline on the study's texts) and `hf` (any hub name
or folder). Both load through `hf.load_pretrained`, and both expose TransformerLens-named hooks."""
