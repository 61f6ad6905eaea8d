"""Data for ccn: the batch format, sources, providers, augmentation and the built-in dataset.

Modules: :mod:`batchfmt` (the on-disk format), :mod:`writer` (writing it, resumably),
:mod:`builtin` (the procedural default dataset), :mod:`sources` (CIFAR, MNIST, image folders),
:mod:`imagenet` (ILSVRC2012 archives), :mod:`images` (decode / resize / encode),
:mod:`augment` (crops, flips, views, colour noise) and :mod:`provider` (what training reads).
"""
