//! What the agent actor does when the guest's keys change.

use actix::{ActorContext, Context, StreamHandler};

use super::state::AgentActor;

impl StreamHandler<()> for AgentActor {
    fn handle(&mut self, _: (), ctx: &mut Context<Self>) {
        self.refresh(ctx);
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.exit.error("the xenstore connection closed");
        ctx.stop();
    }
}

crate::actors::panics_on_injection!(AgentActor, |a| format!(
    "the guest-agent actor of domain {}",
    a.domid
));
