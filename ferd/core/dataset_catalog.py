"""What each dataset is — classes, image size, splits, flip-invariance — without loading any of it.

A table the parameters can read (``FerdConfig.num_classes``) below everything that touches data.
"""

from __future__ import annotations

from dataclasses import dataclass

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")
CIFAR100_CLASSES = tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup
dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower
leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid
otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray
road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar
sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip turtle
wardrobe whale willow_tree wolf woman worm""".split())
assert len(CIFAR100_CLASSES) == 100 and list(CIFAR100_CLASSES) == sorted(CIFAR100_CLASSES)

@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a report need to know about a dataset."""

    num_classes: int
    class_names: tuple[str, ...]
    image_size: int
    channels: int = 3  # images are N×channels×H×W (digits: grey, repeated to 3 channels, as every model takes)
    splits: tuple[str, ...] = ("train", "test")
    flip_invariant: bool = True  # a horizontal flip keeps the label (natural images; not digits)


_INFO: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(10, tuple(str(i) for i in range(10)), 32, flip_invariant=False),
    "cifar10": DatasetInfo(10, CIFAR10_CLASSES, 32),
    "cifar100": DatasetInfo(100, CIFAR100_CLASSES, 32),
    # wnids are only known from the data; names are the class indices (sorted-wnid order).
    "tiny-imagenet": DatasetInfo(200, tuple(str(i) for i in range(200)), 64, ("train", "val", "test")),
}
KNOWN_DATASETS: tuple[str, ...] = tuple(_INFO)
SPLITS: dict[str, tuple[str, ...]] = {k: v.splits for k, v in _INFO.items()}


def dataset_info(name: str) -> DatasetInfo:
    """Number of classes, class names and image size of dataset ``name``."""
    if name not in _INFO:
        raise ValueError(f"dataset: unknown dataset {name!r}; expected one of {list(KNOWN_DATASETS)}")
    return _INFO[name]
