"""Lesion segmentation: 3D U-Net training, inference, model packages and cross-validated experiments.

Modules (one responsibility each):

* :mod:`.config`      presets ``unet-small`` / ``unet-paper`` → a validated config dict;
* :mod:`.network`     builds the MONAI UNet described by a config;
* :mod:`.grid`        crop / resample / paste between the input grid and the model grid (SimpleITK);
* :mod:`.data`        dataset folder → preprocessed femur crops on the model grid;
* :mod:`.transforms`  MONAI augmentation and balanced lesion/background patch sampling;
* :mod:`.package`     model packages (``config.json`` + ``model.safetensors``), safe loading;
* :mod:`.train`       :func:`~bonemet.segmentation.train.train_unet` (resumable, AMP, DDP);
* :mod:`.predict`     :func:`~bonemet.segmentation.predict.predict_volume` / ``predict_file``;
* :mod:`.postprocess` morphological clean-up of a predicted mask;
* :mod:`.experiment`  k-fold Real / Synthetic / Diffusion experiments and their report.

Torch and MONAI are imported by the modules that need them, never by this package ``__init__``.
"""
