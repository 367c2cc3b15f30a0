//! The depth of each queue between the engine's stages, for `/metrics` and the health page.

use tokio::sync::mpsc;

/// The depth of each queue between stages, read without keeping any queue open: a weak sender does
/// not count as a sender, so the stage behind it still sees its input close on shutdown.
#[derive(Default)]
pub struct Queues {
    #[allow(clippy::type_complexity)]
    readers: Vec<(&'static str, Box<dyn Fn() -> (usize, usize) + Send + Sync>)>,
}

impl Queues {
    /// Watches the queue that `sender` feeds, under `name`.
    pub fn watch<T: Send + 'static>(&mut self, name: &'static str, sender: &mpsc::Sender<T>) {
        let weak = sender.downgrade();
        let bound = sender.max_capacity();
        let read = move || match weak.upgrade() {
            Some(sender) => (sender.max_capacity() - sender.capacity(), bound),
            None => (0, bound),
        };
        self.readers.push((name, Box::new(read)));
    }

    /// Watches the queue that a flume `sender` feeds (the rule thread's input), under `name`.
    pub fn watch_flume<T: Send + 'static>(&mut self, name: &'static str, sender: &flume::Sender<T>) {
        let weak = sender.downgrade();
        let bound = sender.capacity().unwrap_or(0);
        let read = move || match weak.upgrade() {
            Some(sender) => (sender.len(), bound),
            None => (0, bound),
        };
        self.readers.push((name, Box::new(read)));
    }

    /// Each queue's name, depth and bound.
    pub fn depths(&self) -> Vec<(&'static str, usize, usize)> {
        self.readers
            .iter()
            .map(|(name, read)| {
                let (depth, bound) = read();
                (*name, depth, bound)
            })
            .collect()
    }
}
