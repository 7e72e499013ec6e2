package image

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/validate"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// selfcheckBinary builds testdata/selfcheck statically once per test run.
func selfcheckBinary(t *testing.T) []byte {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "selfcheck-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "selfcheck")
		cmd := exec.Command("go", "build", "-trimpath", "-o", binPath, "./testdata/selfcheck")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = err
			t.Logf("%s", out)
		}
	})
	if binErr != nil {
		t.Fatalf("build selfcheck: %v", binErr)
	}
	b, err := os.ReadFile(binPath)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func caBundle(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(CABundlePath)
	if err != nil {
		t.Fatalf("this machine needs Debian's ca-certificates: %v", err)
	}
	return b
}

func spec(t *testing.T) Spec {
	return Spec{
		Name: "selfcheck", Binary: selfcheckBinary(t), CABundle: caBundle(t), UID: DefaultUID,
		Ports: []int{7002, 7102}, Version: "test", Created: time.Unix(0, 0).UTC(),
	}
}

// TestImageRunsAsNonRootAndFindsCABundle builds an image with the same
// builder `make images` uses, writes and re-reads the OCI tar, and starts
// the binary chrooted into the unpacked root filesystem as the image user.
func TestImageRunsAsNonRootAndFindsCABundle(t *testing.T) {
	s := spec(t)
	img, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tarPath := filepath.Join(dir, "selfcheck.oci.tar")
	if err := WriteOCITar(tarPath, "mcpid-selfcheck:test", img); err != nil {
		t.Fatal(err)
	}
	back, err := ReadOCITar(tarPath, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Validated as read back from disk (in memory, mutate's nil and empty
	// annotation maps compare unequal although they serialise alike).
	if err := validate.Image(back); err != nil {
		t.Fatalf("image is not well-formed: %v", err)
	}
	want, _ := img.Digest()
	got, _ := back.Digest()
	if want != got {
		t.Fatalf("digest after round trip %s, want %s", got, want)
	}
	cf, err := back.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65532:65532" || cf.Config.Entrypoint[0] != "/usr/local/bin/mcpid-selfcheck" {
		t.Fatalf("config %+v", cf.Config)
	}
	if _, ok := cf.Config.ExposedPorts["7102/tcp"]; !ok {
		t.Fatalf("ports %v", cf.Config.ExposedPorts)
	}
	r, err := Verify(context.Background(), tarPath, dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.UID != DefaultUID || r.GID != DefaultUID || r.SystemRoots < 10 {
		t.Fatalf("report %+v", r)
	}
}

// TestBuildIsReproducible: the same inputs give the same digest.
func TestBuildIsReproducible(t *testing.T) {
	a, err := Build(spec(t))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(spec(t))
	if err != nil {
		t.Fatal(err)
	}
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Fatalf("digests differ: %s %s", da, db)
	}
}

func TestVerifyFailsWithoutCABundle(t *testing.T) {
	s := spec(t)
	s.CABundle = []byte("# no certificates here\n")
	img, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "x.tar")
	if err := WriteOCITar(p, "x:test", img); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(context.Background(), p, dir); err == nil {
		t.Fatal("an image without CA certificates passed")
	}
}

func TestBuildRefusesRootAndMissingParts(t *testing.T) {
	for name, mutate := range map[string]func(*Spec){
		"root":      func(s *Spec) { s.UID = 0 },
		"no binary": func(s *Spec) { s.Binary = nil },
		"no CA":     func(s *Spec) { s.CABundle = nil },
		"no name":   func(s *Spec) { s.Name = "" },
	} {
		s := spec(t)
		mutate(&s)
		if _, err := Build(s); err == nil {
			t.Errorf("%s: Build accepted it", name)
		}
	}
	if _, _, err := numericUser("mcpid"); err == nil || !strings.Contains(err.Error(), "numeric") {
		t.Errorf("named user accepted: %v", err)
	}
}
