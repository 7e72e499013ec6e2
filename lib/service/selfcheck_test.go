package service

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"os"
	"strings"
	"testing"
)

// TestSelfCheckReportsAndRefusesRoot: --selfcheck opens nothing, prints the
// uid and the system CA count, and fails as root. The image tests in
// deploy/ run it as the images' non-root user.
func TestSelfCheckReportsAndRefusesRoot(t *testing.T) {
	var f Flags
	register := func(fs *flag.FlagSet) { f.Register(fs, Defaults{GRPCAddr: "127.0.0.1:0"}) }
	complete := func(context.Context, io.Writer) (*Server, error) {
		t.Fatal("selfcheck must not start the service")
		return nil, nil
	}
	var out bytes.Buffer
	err := run(context.Background(), "svc", []string{"--selfcheck"}, nil, &out, io.Discard, register, complete)
	var r SelfCheck
	if jerr := json.Unmarshal(out.Bytes(), &r); jerr != nil {
		t.Fatalf("report %q: %v", out.String(), jerr)
	}
	if r.UID != os.Getuid() || r.Service != "svc" {
		t.Fatalf("report %+v", r)
	}
	if r.SystemRoots == 0 {
		t.Fatalf("no system CA certificates found on this machine: %+v", r)
	}
	if (r.UID == 0) != (err != nil && strings.Contains(err.Error(), "root")) {
		t.Fatalf("uid %d, err %v: root must fail, non-root pass", r.UID, err)
	}
}

func TestValidateEtcdSettings(t *testing.T) {
	for _, c := range []struct {
		mutate func(*Flags)
		want   string
	}{
		{func(f *Flags) { f.EtcdUsername = "mcpid-token" }, "etcd-username and etcd-password-file"},
		{func(f *Flags) { f.EtcdPasswordFile.Path = "pw" }, "etcd-username and etcd-password-file"},
		{func(f *Flags) { f.EtcdCertFile = "c.pem" }, "etcd-cert-file and etcd-key-file"},
		{func(f *Flags) { f.EtcdCertFile, f.EtcdKeyFile.Path = "c.pem", "k.pem" }, "etcd-ca-file"},
	} {
		f := Flags{GRPCAddr: "127.0.0.1:0", EtcdDialTimeout: 1, ShutdownTimeout: 1}
		c.mutate(&f)
		if err := f.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate() = %v, want an error naming %q", err, c.want)
		}
	}
}
