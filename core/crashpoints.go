package core

import "github.com/fabricmesh/fabric/internal/crashpoint"

// The crash points of activation (see internal/crashpoint): a test kills
// fabricd at each and checks that the cluster converges after the restart.
var (
	crashCoordinatorNetworkUp = crashpoint.New("core/coordinator/network-up",
		"the coordinator's interface is up; the cluster is not committed")
	crashCoordinatorCommitted = crashpoint.New("core/coordinator/cluster-committed",
		"the cluster, coordinator, admin, role and node intents are committed; the admin has not been told")
	crashCoordinatorStartedSent = crashpoint.New("core/coordinator/started-sent",
		"the admin was sent the new cluster; the coordinator's services are not started")
	crashCoordinatorServicesUp = crashpoint.New("core/coordinator/services-started",
		"the coordinator's services run; no node was called")
	crashCoordinatorResumed = crashpoint.New("core/coordinator/activation-resumed",
		"a repeated activation by the committed admin was recognized and answered; its nodes are not resumed")
	crashAddNodesAccepted = crashpoint.New("core/coordinator/add-nodes-accepted",
		"the intents of add-nodes are committed; no node was called")
	crashNodeStateRead = crashpoint.New("core/coordinator/node-state-read",
		"a node told its state; nothing is reserved for it")
	crashNodeReserved = crashpoint.New("core/coordinator/node-reserved",
		"a node's VPN IP is reserved (pending); the node was not asked to activate")
	crashNodeAnswered = crashpoint.New("core/coordinator/node-answered",
		"a node activated itself and answered; the registry still holds it pending")
	crashNodeRecorded = crashpoint.New("core/coordinator/node-recorded",
		"a node is active in the registry; its intent is not deleted and the admin was not told")
	crashNodesDone = crashpoint.New("core/coordinator/nodes-done",
		"every node of an activation or add-nodes has its outcome; the intents are not deleted and the result was not sent")
	crashRecoveryLoaded = crashpoint.New("core/coordinator/recovery-loaded",
		"a restarted coordinator read the intents it must still bring to an outcome; none was retried")

	crashNodeActivationReceived = crashpoint.New("core/node/activation-received",
		"a node got the coordinator's activation request; it changed nothing")
	crashNodeNetworkUp = crashpoint.New("core/node/network-up",
		"a node's interface is up with the coordinator as its peer; its role is not committed")
	crashNodeCommitted = crashpoint.New("core/node/config-committed",
		"a node committed its cluster and role; its services are not started")
	crashNodeServicesUp = crashpoint.New("core/node/services-started",
		"a node's reeve, pastiche and watch run; the coordinator has no answer yet")
)
