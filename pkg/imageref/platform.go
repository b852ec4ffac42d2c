package imageref

import (
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// PlatformString renders a platform as os/arch[/variant].
func PlatformString(p *v1.Platform) string {
	if p == nil {
		return "unknown"
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// ParsePlatforms parses a comma-separated list of os/arch[/variant].
func ParsePlatforms(s string) ([]v1.Platform, error) {
	var out []v1.Platform
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := v1.ParsePlatform(f)
		if err != nil || p.OS == "" || p.Architecture == "" {
			return nil, fmt.Errorf("invalid platform %q (want os/arch[/variant])", f)
		}
		out = append(out, *p)
	}
	return out, nil
}

// PlatformMatches reports whether p satisfies want; a want without a
// variant matches every variant.
func PlatformMatches(want v1.Platform, p *v1.Platform) bool {
	if p == nil {
		return false
	}
	return want.OS == p.OS && want.Architecture == p.Architecture && (want.Variant == "" || want.Variant == p.Variant)
}
