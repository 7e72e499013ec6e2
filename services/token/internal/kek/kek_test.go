package kek

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSealOpenAndRotation(t *testing.T) {
	v1, err := Generate("v1")
	if err != nil {
		t.Fatal(err)
	}
	ring1, err := Parse(v1)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := ring1.Seal("signing-key", "kid1", []byte("secret"))
	if err != nil || sealed.Version != "v1" {
		t.Fatalf("Seal: %+v %v", sealed, err)
	}
	if pt, err := ring1.Open("signing-key", "kid1", sealed); err != nil || string(pt) != "secret" {
		t.Fatalf("Open: %q %v", pt, err)
	}
	// Bound to purpose and id: moved to another record, it does not open.
	if _, err := ring1.Open("signing-key", "kid2", sealed); !errors.Is(err, ErrOpen) {
		t.Fatalf("other id: %v", err)
	}
	if _, err := ring1.Open("connector-secret", "kid1", sealed); !errors.Is(err, ErrOpen) {
		t.Fatalf("other purpose: %v", err)
	}
	// Relabelled with another version, it does not open either.
	relabelled := sealed
	relabelled.Version = "v2"
	v2, _ := Generate("v2")
	ring2, err := Parse(append(v2, v1...))
	if err != nil || ring2.Current() != "v2" {
		t.Fatalf("rotated ring: %v %v", ring2, err)
	}
	if _, err := ring2.Open("signing-key", "kid1", relabelled); !errors.Is(err, ErrOpen) {
		t.Fatalf("relabelled: %v", err)
	}
	// The rotated ring still opens v1 ciphertexts and seals with v2.
	if pt, err := ring2.Open("signing-key", "kid1", sealed); err != nil || string(pt) != "secret" {
		t.Fatalf("v1 under the rotated ring: %v", err)
	}
	if s2, _ := ring2.Seal("signing-key", "kid1", []byte("x")); s2.Version != "v2" {
		t.Fatalf("rotated ring seals with %s", s2.Version)
	}
	if _, err := ring1.Open("signing-key", "kid1", relabelled); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("unknown version: %v", err)
	}
}

func TestParseErrorsDoNotLeakKeys(t *testing.T) {
	for _, in := range []string{"", "# only a comment\n", "v1\n", "v1:c2hvcnQ=\n", "bad version!:AAAA\n", "v1:" + strings.Repeat("A", 43) + "=\nv1:" + strings.Repeat("A", 43) + "=\n"} {
		_, err := Parse([]byte(in))
		if err == nil {
			t.Errorf("Parse(%q) accepted", in)
			continue
		}
		if strings.Contains(err.Error(), "c2hvcnQ") {
			t.Errorf("error echoes key material: %v", err)
		}
	}
}

func TestWriteFileNeverOverwrites(t *testing.T) {
	p := filepath.Join(t.TempDir(), "kek")
	if err := WriteFile(p); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v", fi.Mode(), err)
	}
	if err := WriteFile(p); err == nil {
		t.Fatal("WriteFile overwrote an existing KEK")
	}
	data, _ := os.ReadFile(p)
	if _, err := Parse(data); err != nil {
		t.Fatal(err)
	}
}
