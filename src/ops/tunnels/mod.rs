//! Public tunnels to the daemon's API (issue 28): [`provider`] holds what is known about each
//! client (ssh, localtunnel, cloudflared, ngrok); the supervisor comes on top of it.

pub mod provider;
