package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// familyDict is the image each family member's --chunk-dict names ("-":
// none).
var familyDict = map[string]string{
	"bookworm-min":   "-",
	"bookworm-curl":  "bookworm-min",
	"bookworm-min-2": "bookworm-min",
	"bookworm-min-3": "bookworm-min",
	"trixie-min":     "bookworm-min",
	"trixie-curl":    "trixie-min",
}

// familyDesc describes a family member in the report.
func familyDesc(name, trixieHow string) string {
	switch name {
	case "bookworm-min":
		return "`debootstrap --variant=minbase bookworm` (the rootfs `make bench-build` uses)"
	case "bookworm-curl":
		return "bookworm-min + curl layer (the image of the speed test)"
	case "bookworm-min-2":
		return "bookworm minbase, second independent debootstrap"
	case "bookworm-min-3":
		return "bookworm minbase, third independent debootstrap"
	case "trixie-min":
		return trixieHow
	case "trixie-curl":
		return "trixie-min + curl layer"
	}
	return name
}

// familyModes are the family's conversions, one target repository each:
// the default dedup scope is the target repository.
var familyModes = []string{"dict", "default", "none", "independent"}

// familyExtra is the options a mode adds to nydusify convert for name.
func familyExtra(mode, name, reg string) string {
	switch mode {
	case "dict":
		if d := familyDict[name]; d != "-" {
			return "--chunk-dict bootstrap:registry:" + reg + "/family-dict:" + d
		}
	case "none":
		return "--dedup-scope none"
	case "independent":
		return "--independent --dedup-scope none"
	}
	return ""
}

// convertFamily converts the image family into one repository per mode, checks
// the bootstraps of the dict and default conversions, and records the
// images, reports and dictionary artifacts the report reads.
func (b *bench) convertFamily(ctx context.Context) error {
	p := b.plan
	for _, mode := range familyModes {
		say("family conversions: %s", mode)
		for _, name := range b.family {
			vars := b.vars(1, 1)
			vars["MODE"], vars["NAME"], vars["EXTRA"] = mode, name, familyExtra(mode, name, b.reg)
			label := "family/" + mode + "/" + name
			r, err := timed(ctx, label, 1, b.servicePIDs(), 0, b.lastLog(), cFamily.argv(vars))
			if ctx.Err() != nil {
				return fmt.Errorf("%s: %w", label, ctx.Err())
			}
			if err != nil {
				showTail(b.lastLog(), 15)
				return fmt.Errorf("nydusify convert of %s (%s): %w", name, mode, err)
			}
			b.results[label] = append(b.results[label], r)
			ref := fmt.Sprintf("%s/family-%s:%s", b.reg, mode, name)
			p.images["family/"+name+"/"+mode] = ref
			p.jsons["family/"+name+"/"+mode] = filepath.Join(b.tmp, "json", "family-"+mode+"-"+name+".json")
			if mode == "dict" || mode == "default" {
				if err := b.checkBootstrap(ctx, ref); err != nil {
					return err
				}
			}
		}
	}
	// The dedup scope's dictionary artifacts count in the defaults column.
	p.tags = append(p.tags, [3]string{"family-dictart/", b.reg + "/family-default", "nydus-chunk-dict-"})
	for _, name := range b.family {
		p.images["family/"+name+"/oci"] = b.reg + "/bench/" + name + ":oci"
		p.family = append(p.family, famEntry{name: name, dict: familyDict[name], desc: familyDesc(name, b.trixieHow)})
	}
	return nil
}

// push copies the family's OCI images from the layout to the registry
// and checks that the speed test's image has its two layers.
func (b *bench) push(ctx context.Context) error {
	say("pushing %d OCI images to %s with skopeo", len(b.family), b.reg)
	for _, name := range b.family {
		log := filepath.Join(b.tmp, "logs", "skopeo-"+name+".log")
		if err := run(ctx, log, "skopeo", "copy", "-q", "--dest-tls-verify=false", "oci:"+b.layout+":"+name, "docker://"+b.reg+"/bench/"+name+":oci"); err != nil {
			if out, rerr := os.ReadFile(log); rerr == nil {
				os.Stderr.Write(out)
			}
			return fmt.Errorf("skopeo copy of %s: %w", name, err)
		}
	}
	im, err := fetchImage(b.src())
	if err != nil {
		return fmt.Errorf("cannot read back bookworm-curl: %w", err)
	}
	if len(im.layers) != 2 {
		return fmt.Errorf("bookworm-curl should have 2 layers, has %d", len(im.layers))
	}
	b.layer2 = im.layers[1].Size
	return nil
}
