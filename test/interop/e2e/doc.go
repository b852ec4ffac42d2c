// Package e2e runs Nydus-Go images under containerd end to end, with every
// part real: Debian's docker-registry, containerd 1.6 and runc, upstream
// nydus-snapshotter (pinned in tools/snapshotter) driving our nydusd, and
// images converted by our nydusify from a debootstrapped Debian.
//
// The tests are behind the e2e build tag and need root; run them with
// `make e2e`, which builds the binaries and the image first and passes
// their paths in NYDUSD, NYDUSIFY, NYDUS_IMAGE, SNAPSHOTTER and E2E_IMAGE.
// Every process a test starts is stopped by PID and every mount under its
// directory is unmounted when the test ends.
package e2e
