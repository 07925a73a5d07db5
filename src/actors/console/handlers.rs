//! What the console actor does with the guest's output.

use actix::{ActorContext, ActorFutureExt, AsyncContext, Context, StreamHandler, WrapFuture};

use super::state::{append, ConsoleActor};

impl StreamHandler<Vec<u8>> for ConsoleActor {
    fn handle(&mut self, chunk: Vec<u8>, ctx: &mut Context<Self>) {
        let Some(log) = self.log.take() else {
            return;
        };
        let (config, uuid) = (self.config.clone(), self.uuid);
        // One write at a time, in order: the mailbox waits for it.
        ctx.wait(
            async move { append(log, chunk, &config, &uuid).await }
                .into_actor(self)
                .map(|r, act, ctx| match r {
                    Ok(log) => act.log = Some(log),
                    Err(e) => {
                        act.exit.error(format!("cannot write the console log: {e}"));
                        ctx.stop();
                    }
                }),
        );
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The domain is gone: a normal end.
        tracing::debug!(domid = %self.domid, "console closed");
        ctx.stop();
    }
}

crate::actors::panics_on_injection!(ConsoleActor, |a| format!(
    "the console actor of domain {}",
    a.domid
));
