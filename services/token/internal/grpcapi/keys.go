package grpcapi

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/services/token/internal/keyring"
	"github.com/mcpid/mcpid/services/token/internal/store"
)

// Rotator starts signing key rotations (keyring.Ring).
type Rotator interface {
	Rotate(ctx context.Context, actor *auditv1.Actor, alg string, emergency bool, reason string) (*store.SigningKey, error)
}

func algName(a tokenv1.SigningAlgorithm) string {
	switch a {
	case tokenv1.SigningAlgorithm_SIGNING_ALGORITHM_ES256:
		return "ES256"
	case tokenv1.SigningAlgorithm_SIGNING_ALGORITHM_EDDSA:
		return "EdDSA"
	case tokenv1.SigningAlgorithm_SIGNING_ALGORITHM_RS256:
		return "RS256"
	}
	return ""
}

func signingKeyProto(k *store.SigningKey) *tokenv1.SigningKey {
	return &tokenv1.SigningKey{
		Kid: k.Kid, Alg: algProto(k.Alg), State: stateProto(k.State), CreateTime: ts(k.Created),
		ActivateTime: ts(k.Activate), RetireTime: ts(k.Retire), RemoveTime: ts(k.Remove), KekVersion: k.Private.Version,
	}
}

// RotateSigningKey implements tokenv1.TokenServiceServer.
func (s *Server) RotateSigningKey(ctx context.Context, req *tokenv1.RotateSigningKeyRequest) (*tokenv1.RotateSigningKeyResponse, error) {
	if s.lifecycle.Rotator == nil {
		return nil, apierr.New(codes.Unimplemented, apierr.ReasonInternal, "key rotation is not configured")
	}
	if err := checkReason(req.GetReason()); err != nil {
		return nil, err
	}
	k, err := s.lifecycle.Rotator.Rotate(ctx, actor(ctx), algName(req.GetAlg()), req.GetEmergency(), req.GetReason())
	switch {
	case errors.Is(err, keyring.ErrAlgorithmNotEnabled):
		return nil, apierr.New(codes.FailedPrecondition, tokenv1.ErrorReason_ERROR_REASON_SIGNING_ALGORITHM_NOT_ENABLED.String(),
			"the algorithm is not enabled")
	case errors.Is(err, keyring.ErrRotationInProgress):
		return nil, apierr.New(codes.FailedPrecondition, tokenv1.ErrorReason_ERROR_REASON_SIGNING_KEY_ROTATION_IN_PROGRESS.String(),
			"a new key is already pending; wait until it is active")
	case errors.Is(err, store.ErrConflict):
		return nil, apierr.New(codes.Aborted, apierr.ReasonInternal, "the signing keys changed concurrently; retry")
	case errors.Is(err, keyring.ErrNotReady), store.IsUnavailable(err):
		return nil, apierr.New(codes.Unavailable, tokenv1.ErrorReason_ERROR_REASON_STORE_UNAVAILABLE.String(), "signing keys are not available").WithCause(err)
	case err != nil:
		return nil, err
	}
	return &tokenv1.RotateSigningKeyResponse{Key: signingKeyProto(k)}, nil
}
