"""The annotations a bundle made by ``hako bundle --image`` carries: which
rootfs driver mounts it, from which layers, and where its read-write layer
lives. Read by the layer store (what is in use), the drivers (what to mount)
and the lifecycle extension (when to clean up)."""

ANN_DRIVER = "io.hako.rootfs.driver"
ANN_LAYERS = "io.hako.rootfs.layers"
ANN_ROOT = "io.hako.rootfs.root"       # {"mode","uid","gid"} of the merged root directory
ANN_RWDIR = "io.hako.rootfs.rwdir"
ANN_KEEP = "io.hako.rootfs.keep"
