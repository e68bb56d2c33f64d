//! `echo`: accepts every WebSocket upgrade and sends each message back as it
//! came (text as text, binary as binary). It exists for conformance runs
//! (Autobahn, `docs/PROTOCOL.md`) and as the smallest example of a socket
//! class. Plain HTTP requests get 426.

use super::accept_refused;
use crate::context::Context;
use crate::object::{ErrorCode, LocalFuture, Object, Request, Response};
use crate::ws::{Message, SocketId};

/// The `echo` class. Stateless.
pub struct Echo;

impl Object for Echo {
    fn fetch<'a>(&'a mut self, ctx: &'a Context, req: Request) -> LocalFuture<'a, Response> {
        Box::pin(async move {
            if !req.is_websocket_upgrade() {
                return Response::error(
                    ErrorCode::UpgradeRequired,
                    "echo speaks WebSocket only: connect with Upgrade: websocket",
                );
            }
            match ctx.websockets().accept(&[]) {
                Ok(_) => Response::switching_protocols(),
                Err(e) => accept_refused(&e),
            }
        })
    }

    fn websocket_message<'a>(
        &'a mut self,
        ctx: &'a Context,
        socket: SocketId,
        msg: Message,
    ) -> LocalFuture<'a, ()> {
        // A socket that fell behind is already being closed; nothing to do.
        let _ = ctx.websockets().send(socket, &msg);
        Box::pin(std::future::ready(()))
    }
}
