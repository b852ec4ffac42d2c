package main

import v1 "github.com/google/go-containerregistry/pkg/v1"

type v1Descriptor = v1.Descriptor
