"""Windows helpers shared by inspection and the Windows fixers: offline hives and the virtio-win source."""
