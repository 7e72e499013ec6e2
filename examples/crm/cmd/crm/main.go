// Command crm runs the example CRM MCP server on its own, against a running
// mcpid (for example `mcpid dev`): it authenticates to the policy service
// with an MCP-server mTLS certificate issued by the mcpid CA.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/mcpid/mcpid/examples/crm"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "crm:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:8090", "listen address")
	res := flag.String("resource", "http://127.0.0.1:8090/mcp", "canonical URL of the MCP endpoint (the token audience)")
	issuer := flag.String("issuer", "http://127.0.0.1:8080", "mcpid issuer")
	policyAddr := flag.String("policy-addr", "", "policy service gRPC address")
	tokenAddr := flag.String("token-addr", "", "token service gRPC address: follow its revocation feed (recommended; empty leaves revocation to the policy service)")
	cert := flag.String("tls-cert", "", "MCP-server certificate (PEM) issued by the mcpid CA for -resource")
	key := flag.String("tls-key", "", "its private key (PEM file)")
	ca := flag.String("tls-ca", "", "mcpid CA bundle (PEM)")
	flag.Parse()
	if *policyAddr == "" || *cert == "" || *key == "" || *ca == "" {
		return errors.New("-policy-addr, -tls-cert, -tls-key and -tls-ca are required")
	}
	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		return fmt.Errorf("setting tls-cert/tls-key: %w", err)
	}
	caPEM, err := os.ReadFile(*ca)
	if err != nil {
		return fmt.Errorf("setting tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return errors.New("setting tls-ca: no certificate found")
	}
	// Both connections present the MCP-server certificate of -resource.
	dial := func(addr, serverName string) (*grpc.ClientConn, error) {
		return grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			MinVersion: tls.VersionTLS13, RootCAs: pool, Certificates: []tls.Certificate{pair}, ServerName: serverName,
		})))
	}
	conn, err := dial(*policyAddr, "policy")
	if err != nil {
		return fmt.Errorf("setting policy-addr: %w", err)
	}
	defer conn.Close()
	cfg := crm.Config{Resource: *res, Issuer: *issuer, Policy: conn}
	if *tokenAddr != "" {
		tconn, err := dial(*tokenAddr, "token")
		if err != nil {
			return fmt.Errorf("setting token-addr: %w", err)
		}
		defer tconn.Close()
		cfg.Token = tconn
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg.Logger = log
	srv, err := crm.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", *addr)
	if err != nil {
		return fmt.Errorf("setting addr: %w", err)
	}
	log.Info("crm: serving", "resource", *res, "metadata", srv.Guard().MetadataURL())
	return srv.Run(ctx, lis)
}
