package dev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/mcpid/mcpid/examples/crm"
	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/devca"
	policyserver "github.com/mcpid/mcpid/services/policy/server"
	tokenserver "github.com/mcpid/mcpid/services/token/server"
)

// crmPolicyDeadline bounds how long the dev environment keeps trying to
// store the CRM's operator policy while the policy service starts.
const crmPolicyDeadline = time.Minute

// startCRM starts the example CRM MCP server on lis as an MCP server with
// its own mTLS identity (its resource URI), and stores its operator policy
// in the background. It returns the MCP endpoint and a stop function that
// waits for the server to end.
func startCRM(ctx context.Context, lis net.Listener, ca *devca.CA, issuer, policyAddr, tokenAddr string, logOut io.Writer) (string, func(), error) {
	resource := "http://" + lis.Addr().String() + "/mcp"
	leaf, err := ca.IssueMCPServer(resource)
	if err != nil {
		return "", nil, fmt.Errorf("CRM certificate: %w", err)
	}
	cert := leaf.TLSCertificate()
	policyConn, err := grpc.NewClient(policyAddr,
		grpc.WithTransportCredentials(credentials.NewTLS(devca.ClientTLSConfig(ca.Pool(), &cert, policyserver.Name))))
	if err != nil {
		return "", nil, fmt.Errorf("CRM policy connection: %w", err)
	}
	// The revocation feed: a revoked token is refused at the CRM at once,
	// not when a cached decision expires.
	tokenConn, err := grpc.NewClient(tokenAddr,
		grpc.WithTransportCredentials(credentials.NewTLS(devca.ClientTLSConfig(ca.Pool(), &cert, tokenserver.Name))))
	if err != nil {
		_ = policyConn.Close()
		return "", nil, fmt.Errorf("CRM token connection: %w", err)
	}
	adminLeaf, err := ca.IssueOperator("mcpid-dev", devca.RoleAdmin)
	if err != nil {
		_ = policyConn.Close()
		_ = tokenConn.Close()
		return "", nil, fmt.Errorf("CRM policy: %w", err)
	}
	adminCert := adminLeaf.TLSCertificate()
	adminConn, err := grpc.NewClient(policyAddr,
		grpc.WithTransportCredentials(credentials.NewTLS(devca.ClientTLSConfig(ca.Pool(), &adminCert, policyserver.Name))))
	if err != nil {
		_ = policyConn.Close()
		_ = tokenConn.Close()
		return "", nil, fmt.Errorf("CRM policy: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := crm.New(crm.Config{Resource: resource, Issuer: issuer, Policy: policyConn, Token: tokenConn, Logger: log})
	if err != nil {
		_ = policyConn.Close()
		_ = tokenConn.Close()
		_ = adminConn.Close()
		return "", nil, fmt.Errorf("CRM server: %w", err)
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Run(runCtx, lis); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("CRM server stopped", "error", err)
		}
	}()
	policyDone := make(chan struct{})
	go func() {
		defer close(policyDone)
		if err := putCRMPolicy(runCtx, policyv1.NewPolicyServiceClient(adminConn), crm.Policy(resource)); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("CRM policy not stored", "error", err)
		}
	}()
	stop := func() {
		cancel()
		<-done
		<-policyDone
		_ = policyConn.Close()
		_ = tokenConn.Close()
		_ = adminConn.Close()
	}
	return resource, stop, nil
}

// putCRMPolicy stores the CRM's operator policy once: create-only, so an
// operator's later changes survive restarts. It retries while the policy
// service is starting.
func putCRMPolicy(ctx context.Context, client policyv1.PolicyServiceClient, p *policyv1.Policy) error {
	ctx, cancel := context.WithTimeout(ctx, crmPolicyDeadline)
	defer cancel()
	createOnly := int64(0)
	for {
		_, err := client.PutPolicy(ctx, &policyv1.PutPolicyRequest{Policy: p, ExpectedRevision: &createOnly})
		switch status.Code(err) {
		case codes.OK, codes.AlreadyExists:
			return nil
		case codes.Unavailable, codes.DeadlineExceeded, codes.FailedPrecondition:
			// Starting up; try again.
		default:
			return fmt.Errorf("storing the CRM policy: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("storing the CRM policy: %w (last error: %w)", ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
