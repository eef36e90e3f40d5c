"""Host-independent InstructPix2Pix logic: plain torch/numpy/safetensors, no ComfyUI imports."""
