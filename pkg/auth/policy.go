package auth

import (
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
)

// Policy maps each procedure ("/fsb.v1.FastPathService/CreateSandbox") to
// the roles that may call it. A procedure it does not name is denied to
// everyone: a new RPC needs its line here (a test checks every one has).
type Policy map[string][]Role

// FilesRoute names the controller's plain HTTP file route (GET and PUT
// /files/{namespace}/{name}?path=) in FastPathPolicy; Route guards it.
const FilesRoute = "/files"

// FastPathPolicy is the controller's, for the fast path, its file route
// and the janitor's service on the same port: users call the user API, the
// janitor only its question.
var FastPathPolicy = Policy{
	fsbv1connect.FastPathServiceCreateSandboxProcedure:   {RoleUser},
	fsbv1connect.FastPathServiceDeleteSandboxProcedure:   {RoleUser},
	fsbv1connect.FastPathServiceUpdateSandboxProcedure:   {RoleUser},
	fsbv1connect.FastPathServiceListSandboxesProcedure:   {RoleUser},
	fsbv1connect.FastPathServiceGetSandboxProcedure:      {RoleUser},
	fsbv1connect.FastPathServiceStreamLogsProcedure:      {RoleUser},
	fsbv1connect.FastPathServiceListAgentsProcedure:      {RoleUser},
	fsbv1connect.FastPathServiceExecProcedure:            {RoleUser},
	fsbv1connect.FastPathServiceExecInteractiveProcedure: {RoleUser},
	fsbv1connect.FastPathServiceAttachProcessProcedure:   {RoleUser},
	fsbv1connect.FastPathServiceSendInputProcedure:       {RoleUser},
	fsbv1connect.FastPathServiceCloseInputProcedure:      {RoleUser},
	fsbv1connect.FastPathServiceSignalProcessProcedure:   {RoleUser},
	fsbv1connect.FastPathServiceResizePtyProcedure:       {RoleUser},
	fsbv1connect.FastPathServiceListProcessesProcedure:   {RoleUser},
	fsbv1connect.FastPathServiceGetSandboxUsageProcedure: {RoleUser},
	fsbv1connect.FastPathServiceReadFileProcedure:        {RoleUser},
	fsbv1connect.FastPathServiceWriteFileProcedure:       {RoleUser},
	fsbv1connect.FastPathServiceListDirProcedure:         {RoleUser},
	fsbv1connect.FastPathServiceStatProcedure:            {RoleUser},
	fsbv1connect.FastPathServiceMakeDirProcedure:         {RoleUser},
	fsbv1connect.FastPathServiceMoveProcedure:            {RoleUser},
	fsbv1connect.FastPathServiceRemoveProcedure:          {RoleUser},
	fsbv1connect.FastPathServiceApplyPoolProcedure:       {RoleUser},
	fsbv1connect.FastPathServiceGetPoolProcedure:         {RoleUser},
	fsbv1connect.FastPathServiceListPoolsProcedure:       {RoleUser},
	fsbv1connect.FastPathServiceDeletePoolProcedure:      {RoleUser},
	FilesRoute: {RoleUser},
	fsbv1connect.JanitorServiceClassifyProcedure: {RoleJanitor},
}

// AgentPolicy is the agent's: only holders of its token (the controller).
var AgentPolicy = Policy{
	fsbv1connect.AgentServiceCreateSandboxProcedure:   {RoleAgent},
	fsbv1connect.AgentServiceDeleteSandboxProcedure:   {RoleAgent},
	fsbv1connect.AgentServiceGetStatusProcedure:       {RoleAgent},
	fsbv1connect.AgentServiceWatchStatusProcedure:     {RoleAgent},
	fsbv1connect.AgentServiceStreamLogsProcedure:      {RoleAgent},
	fsbv1connect.AgentServiceMarkPersistedProcedure:   {RoleAgent},
	fsbv1connect.AgentServiceSetWarmProcedure:         {RoleAgent},
	fsbv1connect.AgentServiceExecProcedure:            {RoleAgent},
	fsbv1connect.AgentServiceAttachProcessProcedure:   {RoleAgent},
	fsbv1connect.AgentServiceSendInputProcedure:       {RoleAgent},
	fsbv1connect.AgentServiceCloseInputProcedure:      {RoleAgent},
	fsbv1connect.AgentServiceSignalProcessProcedure:   {RoleAgent},
	fsbv1connect.AgentServiceResizePtyProcedure:       {RoleAgent},
	fsbv1connect.AgentServiceListProcessesProcedure:   {RoleAgent},
	fsbv1connect.AgentServiceGetSandboxUsageProcedure: {RoleAgent},
	fsbv1connect.AgentServiceReadFileProcedure:        {RoleAgent},
	fsbv1connect.AgentServiceWriteFileProcedure:       {RoleAgent},
	fsbv1connect.AgentServiceListDirProcedure:         {RoleAgent},
	fsbv1connect.AgentServiceStatProcedure:            {RoleAgent},
	fsbv1connect.AgentServiceMakeDirProcedure:         {RoleAgent},
	fsbv1connect.AgentServiceMoveProcedure:            {RoleAgent},
	fsbv1connect.AgentServiceRemoveProcedure:          {RoleAgent},
}

// Group is the API group of the resources Kubernetes users are authorized
// on: the Sandbox CRD's.
const Group = "sandbox.fast.io"

// Access is what a Kubernetes user needs for a call: a verb on a resource
// (and subresource) of Group, in the request's namespace unless Cluster.
type Access struct {
	Verb, Resource, Subresource string
	// Cluster: the check is cluster-scoped, whatever the request says.
	Cluster bool
	// EmptyIsAll: an empty namespace means every namespace (the check's
	// namespace is ""), not DefaultNamespace.
	EmptyIsAll bool
}

// DefaultNamespace is the namespace of a request that names none, as the
// fast path reads it.
const DefaultNamespace = "default"

// resource names a.Resource with its subresource, as RBAC rules do
// ("sandboxes/exec").
func (a Access) resource() string {
	if a.Subresource == "" {
		return a.Resource
	}
	return a.Resource + "/" + a.Subresource
}

// namespace returns the namespace a request message names: its namespace
// field, or its start message's (ExecInteractive).
func (a Access) namespace(msg any) string {
	var ns string
	switch m := msg.(type) {
	case interface{ GetNamespace() string }:
		ns = m.GetNamespace()
	case interface{ GetStart() *fsbv1.ExecRequest }:
		ns = m.GetStart().GetNamespace()
	}
	if ns == "" && !a.EmptyIsAll {
		ns = DefaultNamespace
	}
	return ns
}

// The accesses of KubeAccess, as kubectl's: reading logs is get on
// pods/log, exec is create on pods/exec (and kubectl cp is an exec).
var (
	accessCreate = Access{Verb: "create", Resource: "sandboxes"}
	accessGet    = Access{Verb: "get", Resource: "sandboxes"}
	accessList   = Access{Verb: "list", Resource: "sandboxes", EmptyIsAll: true}
	accessUpdate = Access{Verb: "update", Resource: "sandboxes"}
	accessDelete = Access{Verb: "delete", Resource: "sandboxes"}
	accessLog    = Access{Verb: "get", Resource: "sandboxes", Subresource: "log"}
	accessExec   = Access{Verb: "create", Resource: "sandboxes", Subresource: "exec"}
	accessAgents = Access{Verb: "list", Resource: "agents", Cluster: true}
	// Pools live in the controller's pool namespace, which no request
	// names: their checks are cluster-scoped (a ClusterRole).
	accessPoolApply  = Access{Verb: "update", Resource: "sandboxpools", Cluster: true}
	accessPoolGet    = Access{Verb: "get", Resource: "sandboxpools", Cluster: true}
	accessPoolList   = Access{Verb: "list", Resource: "sandboxpools", Cluster: true}
	accessPoolDelete = Access{Verb: "delete", Resource: "sandboxpools", Cluster: true}
)

// KubeAccess maps each procedure of the user role to what a Kubernetes user
// needs to call it (a SubjectAccessReview); a procedure it does not name is
// closed to Kubernetes users (a test checks every user procedure has a line,
// another that docs/security.md says the same). GetSandboxUsage is a get:
// it reads figures about a sandbox, as kubectl top reads a pod's, and runs
// nothing inside it.
var KubeAccess = map[string]Access{
	fsbv1connect.FastPathServiceCreateSandboxProcedure:   accessCreate,
	fsbv1connect.FastPathServiceDeleteSandboxProcedure:   accessDelete,
	fsbv1connect.FastPathServiceUpdateSandboxProcedure:   accessUpdate,
	fsbv1connect.FastPathServiceListSandboxesProcedure:   accessList,
	fsbv1connect.FastPathServiceGetSandboxProcedure:      accessGet,
	fsbv1connect.FastPathServiceGetSandboxUsageProcedure: accessGet,
	fsbv1connect.FastPathServiceStreamLogsProcedure:      accessLog,
	fsbv1connect.FastPathServiceListAgentsProcedure:      accessAgents,
	fsbv1connect.FastPathServiceApplyPoolProcedure:       accessPoolApply,
	fsbv1connect.FastPathServiceGetPoolProcedure:         accessPoolGet,
	fsbv1connect.FastPathServiceListPoolsProcedure:       accessPoolList,
	fsbv1connect.FastPathServiceDeletePoolProcedure:      accessPoolDelete,
	fsbv1connect.FastPathServiceExecProcedure:            accessExec,
	fsbv1connect.FastPathServiceExecInteractiveProcedure: accessExec,
	fsbv1connect.FastPathServiceAttachProcessProcedure:   accessExec,
	fsbv1connect.FastPathServiceSendInputProcedure:       accessExec,
	fsbv1connect.FastPathServiceCloseInputProcedure:      accessExec,
	fsbv1connect.FastPathServiceSignalProcessProcedure:   accessExec,
	fsbv1connect.FastPathServiceResizePtyProcedure:       accessExec,
	fsbv1connect.FastPathServiceListProcessesProcedure:   accessExec,
	fsbv1connect.FastPathServiceReadFileProcedure:        accessExec,
	fsbv1connect.FastPathServiceWriteFileProcedure:       accessExec,
	fsbv1connect.FastPathServiceListDirProcedure:         accessExec,
	fsbv1connect.FastPathServiceStatProcedure:            accessExec,
	fsbv1connect.FastPathServiceMakeDirProcedure:         accessExec,
	fsbv1connect.FastPathServiceMoveProcedure:            accessExec,
	fsbv1connect.FastPathServiceRemoveProcedure:          accessExec,
	FilesRoute: accessExec,
}
