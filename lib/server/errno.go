package server

import "syscall"

// syscallEADDRINUSE lets listen name the common "port taken" failure.
var syscallEADDRINUSE = syscall.EADDRINUSE
