// Package imageref locates container images and opens them: in a
// registry, in an OCI layout directory (`oci:DIR[:TAG]`) or in an OCI
// layout tar archive. nydusify's converter, checker and copier all go
// through it, so a reference parses, resolves and fails the same way in
// every subcommand.
//
// The entry points are [Parse] (a reference from the command line),
// [NewClient] (registry access for one set of [RegistryOptions], with
// one go-containerregistry puller and pusher so that connections and
// tokens are reused across calls), [Open] (a reference resolved to a
// go-containerregistry image or index) and [Describe] (a registry error
// turned into one line that names the image and the registry, wrapping
// an [errdefs] kind).
//
// See ExampleParse for the reference forms.
package imageref
