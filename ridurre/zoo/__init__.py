"""Reference models (VGG16-CIFAR10, ResNet-CIFAR, EEGNet, small CNNs) and dataset loaders that
also work offline (bundled digits, local CIFAR-10/MNIST files, ``.npz``, synthetic SSVEP)."""

from ridurre._lazy import lazy_exports

_EXPORTS = {
    name: f"ridurre.zoo.models:{name}"
    for name in ("vgg16_cifar10", "resnet_cifar", "eegnet", "small_cnn", "small_resnet")
}
_EXPORTS.update(
    {
        name: f"ridurre.zoo.datasets:{name}"
        for name in (
            "Dataset",
            "load_cifar10",
            "load_dataset",
            "load_digits",
            "load_mnist",
            "load_npz",
            "make_ssvep_dataset",
        )
    }
)

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
