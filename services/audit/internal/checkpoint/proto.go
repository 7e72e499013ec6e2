package checkpoint

import (
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/services/audit/internal/store"
)

// ToProto returns the API form of a stored checkpoint.
func ToProto(r store.CheckpointRecord) *auditv1.Checkpoint {
	cp := &auditv1.Checkpoint{
		Sequence: r.Sequence, HeadHash: r.HeadHash, HeadEventId: r.HeadEventID,
		Issuer: r.Issuer, KeyId: r.KeyID, Algorithm: r.Algorithm, Jws: r.JWS,
	}
	if !r.SignTime.IsZero() {
		cp.SignTime = timestamppb.New(r.SignTime)
	}
	return cp
}

// KeyProto returns the API form of a key; use may be nil.
func KeyProto(k PublicKey, first, last *timestamppb.Timestamp) (*auditv1.CheckpointKey, error) {
	jwk, err := structpb.NewStruct(k.JWK)
	if err != nil {
		return nil, err
	}
	status := auditv1.CheckpointKeyStatus_CHECKPOINT_KEY_STATUS_RETIRED
	if k.Active {
		status = auditv1.CheckpointKeyStatus_CHECKPOINT_KEY_STATUS_ACTIVE
	}
	return &auditv1.CheckpointKey{
		KeyId: k.KeyID, Algorithm: k.Algorithm, Status: status, PublicJwk: jwk, Thumbprint: k.Thumbprint,
		FirstUsedTime: first, LastUsedTime: last,
	}, nil
}
