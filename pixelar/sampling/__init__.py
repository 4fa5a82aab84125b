"""Cached O(dimensions) samplers, one per model family, used by the models' ``sample(n,
fast=True)``: each packs its model's weights and runs a whole-generation op
(``pixelar.ops.pixel_network_sample_step``, ``nade_sample``, ``rnade_sample``)."""
from .nade import sample_nade, sample_rnade
from .pixel_networks import layer_kind, pack_pixel_network, sample_pixel_network

__all__ = ["sample_pixel_network", "pack_pixel_network", "layer_kind", "sample_nade",
           "sample_rnade"]
