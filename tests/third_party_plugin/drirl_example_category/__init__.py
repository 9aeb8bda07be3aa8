"""An example third-party drirl plugin: the harm category 'misinformation'."""
