#!/usr/bin/env bash
# Lay out the real datasets available offline in torchvision's layout under ROOT, for the `check` profile:
#   MNIST (train and test) from ../shared/data/mnist, Fashion-MNIST (train and test) from Debian's
#   dataset-fashion-mnist package (installed here when missing; needs apt-get and root).
# Usage: workflows/scripts/offline_data.sh ROOT [SHARED]   (SHARED defaults to ../shared next to the checkout)
set -euo pipefail
root=${1:?usage: offline_data.sh ROOT [SHARED]}
here=$(cd "$(dirname "$0")/../.." && pwd)
shared=${2:-$here/../shared}
debian=/usr/share/datasets/fashion-mnist
if [ ! -f "$debian/train-images-idx3-ubyte.gz" ]; then
  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
mkdir -p "$root/MNIST/raw" "$root/FashionMNIST/raw"
for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  gunzip -c "$shared/data/mnist/$name.gz" > "$root/MNIST/raw/$name"
  gunzip -c "$debian/$name.gz" > "$root/FashionMNIST/raw/$name"
done
echo "MNIST and Fashion-MNIST in $root"
