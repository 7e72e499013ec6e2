package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcdConfig is the etcd client configuration of the settings: endpoints,
// the service's etcd user (lib/etcdauth) and TLS when etcd-ca-file is set.
func etcdConfig(ctx context.Context, f Flags) (clientv3.Config, error) {
	cfg := clientv3.Config{
		Endpoints:   f.EtcdEndpoints,
		DialTimeout: f.EtcdDialTimeout,
		Logger:      zap.NewNop(),
		Context:     ctx,
	}
	if f.EtcdUsername != "" {
		pw, err := f.EtcdPasswordFile.Read()
		if err != nil {
			return cfg, fmt.Errorf("setting etcd-password-file: %w", err)
		}
		cfg.Username = f.EtcdUsername
		// A trailing newline is how editors and `kubectl create secret
		// --from-file` leave a password file; it is never part of it.
		cfg.Password = strings.TrimRight(string(pw), "\r\n")
	}
	if f.EtcdCAFile == "" {
		return cfg, nil
	}
	caPEM, err := os.ReadFile(f.EtcdCAFile)
	if err != nil {
		return cfg, fmt.Errorf("setting etcd-ca-file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return cfg, errors.New("setting etcd-ca-file: no PEM certificates found")
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	if f.EtcdCertFile != "" {
		key, err := f.EtcdKeyFile.Read()
		if err != nil {
			return cfg, fmt.Errorf("setting etcd-key-file: %w", err)
		}
		certPEM, err := os.ReadFile(f.EtcdCertFile)
		if err != nil {
			return cfg, fmt.Errorf("setting etcd-cert-file: %w", err)
		}
		cert, err := tls.X509KeyPair(certPEM, key)
		if err != nil {
			return cfg, fmt.Errorf("settings etcd-cert-file/etcd-key-file: %w", err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	}
	cfg.TLS = tlsCfg
	return cfg, nil
}
