"""3D DDPM on healthy femurs and SDEdit/DDIM refinement of synthetic lesioned CTs (MONAI generative models).

Public API:

* :func:`bonemet.diffusion.train.train_ddpm` — train / resume a model folder (``bonemet ddpm train``);
* :func:`bonemet.diffusion.model_io.load_model` — safe loading (safetensors + JSON, hashes checked);
* :func:`bonemet.diffusion.refine.refine_volume` — refine one CT array;
* :func:`bonemet.diffusion.refine.refine_dataset` — refine a dataset folder (``bonemet refine``).
"""
