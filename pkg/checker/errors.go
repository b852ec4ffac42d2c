package checker

import "errors"

// Sentinel errors of a check, wrapped by the one-line errors Check
// returns. Registry and reference failures wrap the errdefs kinds
// instead: errdefs.ErrNotFound (HTTP 404, no such image in a layout),
// errdefs.ErrPermission (HTTP 401/403), errdefs.ErrUnavailable (a
// registry that cannot be reached) and errdefs.ErrUnsupported.
var (
	// ErrNotNydus reports a target that is not a Nydus image.
	ErrNotNydus = errors.New("not a Nydus image")
	// ErrSourceIsNydus reports a source that is itself a Nydus image.
	ErrSourceIsNydus = errors.New("source is a Nydus image")
	// ErrNoPlatform reports an index without a manifest for a requested
	// platform.
	ErrNoPlatform = errors.New("no manifest for the requested platform")
)
