"""`ModelOptions`: what `create_model` takes besides the name (weight source, classes, resolution, test-bed
profile), declared once. The CLI's model flags (--weights, --num-classes, --img-size, --testbed-profile) are
generated from it, and a bad value fails with one line naming the field (the flag, on the command line).
Light on purpose (no torch): the CLI builds its parser from it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .options import Options, option


@dataclass(frozen=True)
class ModelOptions(Options):
    """`create_model`'s choices besides the name, declared once: the CLI's model flags come from here."""

    weights: str = option("auto", "'auto' (testbed: the converged reference, fine-tuned end to end; else timm's "
                                  "on-disk cache), 'probe' (testbed: frozen backbone + linear probe only), 'random' "
                                  "(smoke tests), 'timm-cache', or a local .safetensors/.pth file. Never downloads",
                          flag=("--weights", "-w"), metavar="SOURCE")
    num_classes: Optional[int] = option(None, "classifier size (timm models only)", min=1, max=1_000_000, metavar="N")
    img_size: Optional[int] = option(None, "input resolution (timm models only)", min=1, max=16_384, metavar="PX")
    testbed_profile: str = option("quick", "test bed sizes: quick (56 px, probe and reference fine-tune on 3k "
                                           "training images, 1k test images) or full (56 px, 20k training images, all "
                                           "10k test images)", choices=("quick", "full"))
