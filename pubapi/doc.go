// Package pubapi is the public API every fabric peer serves on its public
// endpoint: GetState and the activation calls (ActivateAsCoordinator,
// ActivateAsNode, ActivateAdditionalNodes). The handlers check which
// credential the connection proved (internal/authconn), call core and map
// its errors to gRPC status codes; they hold no logic of their own.
//
// Who may call what:
//
//	GetState                 bootstrap key or admin key (cluster status: admin key only)
//	ActivateAsCoordinator    bootstrap key
//	ActivateAsNode           bootstrap key (the coordinator)
//	ActivateAdditionalNodes  admin key
package pubapi
