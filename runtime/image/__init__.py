"""Images to bundles: OCI/docker archives, a per-user layer store, rootfs drivers.

One module per concern:

- ``digest``: sha256 digests, verified while blobs are read;
- ``source``: OCI image layouts (directories, oci-archive tarballs) and
  docker-archive tarballs; manifest selection by name/digest and platform;
- ``unpack``: one layer tar into one directory in overlay format (OCI
  whiteouts become overlay whiteouts), refusing entries that escape it;
- ``idmap``: the rootless id mapping (/etc/subuid) and a helper that runs a
  function as root of a user namespace with that mapping;
- ``store``: the content-addressed layer store (unpack once, per-digest locks,
  completion markers), image records, bundle references, ls/rm/prune;
- ``bundle``: config.json from the image config, and the bundle on disk;
- ``drivers``: overlay / fuse-overlayfs / vfs: the choice, the mount in the
  container's init, and the clean-up at delete (imported by the init: cheap);
- ``flatten``: the vfs driver's private copy of the layers;
- ``progress``: progress on a terminal.

Nothing here is imported by the lifecycle verbs unless the container was made
from an image (annotation ``io.hako.rootfs.driver``).
"""
