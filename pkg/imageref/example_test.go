package imageref_test

import (
	"fmt"
	"log"

	"github.com/nydus-go/nydus/pkg/imageref"
)

// Parse takes the references nydusify's --source and --target take:
// registry references (Docker Hub's short names too), OCI layout
// directories (`oci:DIR[:TAG]`) and, with archive set, OCI layout tar
// archives.
func ExampleParse() {
	for _, s := range []string{
		"registry.example.com:5000/team/app:1.0",
		"alpine",
		"oci:/var/lib/images/app:v1",
		"oci:/var/lib/images/app",
	} {
		r, err := imageref.Parse(s, false, imageref.RegistryOptions{})
		if err != nil {
			log.Fatal(err)
		}
		if r.IsRegistry() {
			fmt.Printf("registry %s, repository %s, tag %s\n",
				r.Name.Context().RegistryStr(), r.Name.Context().RepositoryStr(), r.Name.Identifier())
		} else {
			fmt.Printf("OCI layout %s, tag %q\n", r.Dir, r.Tag)
		}
	}

	r, err := imageref.Parse("app.tar", true, imageref.RegistryOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("OCI layout archive", r.Archive)

	_, err = imageref.Parse("Not A Reference", false, imageref.RegistryOptions{})
	fmt.Println("rejected:", err != nil)
	// Output:
	// registry registry.example.com:5000, repository team/app, tag 1.0
	// registry index.docker.io, repository library/alpine, tag latest
	// OCI layout /var/lib/images/app, tag "v1"
	// OCI layout /var/lib/images/app, tag ""
	// OCI layout archive app.tar
	// rejected: true
}
