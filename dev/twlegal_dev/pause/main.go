// pause: the sandbox ("infra") container of every pod on the local node. It holds the pod's
// namespaces open, reaps zombies (it is PID 1 when the pod shares its PID namespace) and exits on
// SIGTERM/SIGINT. Kubernetes' own pause is C; this is the same behaviour, built static from Go so
// no registry is needed for it.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		os.Stdout.WriteString("twlegal-pause 0.1.0\n")
		return
	}
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
