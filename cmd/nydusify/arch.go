package main

import "runtime"

var goarch = runtime.GOARCH
