//! The server side of the protocol: the answering peer, and (with `serve`) the relay and viewer.

pub mod answerer;
