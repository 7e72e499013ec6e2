package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type settings struct {
	grpcAddr string
	timeout  time.Duration
	replicas int
	cidrs    StringList
	secret   SecretFile
}

func newFlags(s *settings) *flag.FlagSet {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	fs.String(ConfigFlag, "", "YAML config file")
	fs.StringVar(&s.grpcAddr, "grpc-addr", "127.0.0.1:9000", "gRPC listen address")
	fs.DurationVar(&s.timeout, "shutdown-timeout", 10*time.Second, "shutdown bound")
	fs.IntVar(&s.replicas, "replicas", 1, "replicas")
	fs.Var(&s.cidrs, "dcr-allowed-cidr", "CIDRs allowed to register")
	fs.Var(&s.secret, "kek-file", "key-encryption key file")
	return fs
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrecedence(t *testing.T) {
	cfgFile := writeFile(t, "c.yaml", "grpc-addr: 127.0.0.1:1\nshutdown-timeout: 3s\nreplicas: 2\ndcr-allowed-cidr: [10.0.0.0/8, 192.168.0.0/16]\n")
	var s settings
	fs := newFlags(&s)
	unknown, err := Load(fs,
		[]string{"--config", cfgFile, "--replicas", "5"},
		[]string{"MCPID_SHUTDOWN_TIMEOUT=7s", "MCPID_REPLICAS=4", "MCPID_GRCP_ADDR=typo", "PATH=/bin"},
	)
	if err != nil {
		t.Fatal(err)
	}
	if s.grpcAddr != "127.0.0.1:1" {
		t.Errorf("file value not applied: %q", s.grpcAddr)
	}
	if s.timeout != 7*time.Second {
		t.Errorf("environment should beat the file: %v", s.timeout)
	}
	if s.replicas != 5 {
		t.Errorf("flag should beat environment and file: %d", s.replicas)
	}
	if got := s.cidrs.String(); got != "10.0.0.0/8,192.168.0.0/16" {
		t.Errorf("list from file: %q", got)
	}
	if len(unknown) != 1 || unknown[0] != "MCPID_GRCP_ADDR" {
		t.Errorf("unknown env = %v", unknown)
	}
}

func TestBadValueNamesTheSetting(t *testing.T) {
	cases := []struct {
		args, env []string
		file      string
		want      []string
	}{
		{env: []string{"MCPID_SHUTDOWN_TIMEOUT=soon"}, want: []string{"shutdown-timeout", "MCPID_SHUTDOWN_TIMEOUT"}},
		{file: "replicas: many\n", want: []string{"replicas", "config file"}},
		{file: "no-such-setting: 1\n", want: []string{`unknown setting "no-such-setting"`}},
		{file: "grpc-addr: [unclosed\n", want: []string{"config file"}},
		{args: []string{"--replicas", "x"}, want: []string{"replicas"}},
		{args: []string{"--config", "/nonexistent/mcpid.yaml"}, want: []string{"setting config"}},
	}
	for _, c := range cases {
		var s settings
		args := c.args
		if c.file != "" {
			args = append(args, "--config", writeFile(t, "c.yaml", c.file))
		}
		_, err := Load(newFlags(&s), args, c.env)
		if err == nil {
			t.Errorf("%+v: no error", c)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: error %q does not mention %q", c, err, w)
			}
		}
	}
}

func TestSecretFile(t *testing.T) {
	var s settings
	path := writeFile(t, "kek", "s3cr3t\n")
	if _, err := Load(newFlags(&s), nil, []string{"MCPID_KEK_FILE=" + path}); err != nil {
		t.Fatal(err)
	}
	if s.secret.String() != path {
		t.Fatalf("String() must show the path, got %q", s.secret.String())
	}
	got, err := s.secret.Read()
	if err != nil || string(got) != "s3cr3t" {
		t.Fatalf("Read = %q, %v", got, err)
	}
	empty := SecretFile{Path: writeFile(t, "empty", "\n")}
	if _, err := empty.Read(); err == nil {
		t.Error("empty secret accepted")
	}
	huge := SecretFile{Path: writeFile(t, "huge", strings.Repeat("x", maxSecretBytes+1))}
	if _, err := huge.Read(); err == nil {
		t.Error("oversized secret accepted")
	}
	var none SecretFile
	if _, err := none.Read(); err == nil {
		t.Error("missing path accepted")
	}
}
