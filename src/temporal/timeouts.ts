/**
 * How long a workflow task may run on a worker before Temporal gives it to another
 * (default 10 s). A worker SIGKILLed in the middle of one leaves it to time out: this
 * bounds that wait. Sluice's workflow tasks take milliseconds; 5 s leaves room for a
 * loaded machine and keeps recovery after a kill within the 10 s it promises.
 */
export const WORKFLOW_TASK_TIMEOUT = '5 seconds';
