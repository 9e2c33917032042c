"""Sparse autoencoders: `train` (sae-lens, on the study's activations), `pretrained` (the sae-lens
registry) and `local` (a folder saved by sae-lens). Each option checks, before any weight is loaded
where it can, that its hook exists in the model and that its width matches the model's."""
